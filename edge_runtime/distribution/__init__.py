"""How releases reach a device: the signed bundle format, the trusted keys, the on-disk model repository
(install, CURRENT, rollback) and the puller that follows the coordinator's release service."""
