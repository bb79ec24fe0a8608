"""Platform commands: types, verification, ops, signing, the audit ledger, the service."""
