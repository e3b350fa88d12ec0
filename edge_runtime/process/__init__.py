"""``fedge edge serve`` as a process: assembles data plane, front ends, metrics and puller; systemd's protocol."""
