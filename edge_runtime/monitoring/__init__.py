"""On-device monitoring and feedback: label-free health signals of a served model's answers (class and confidence
histograms, entropy, text statistics, drift against the release's reference, an estimated accuracy), the
corrections clients send, and the counts-only summary a device reports to the coordinator."""
