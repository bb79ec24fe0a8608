"""The technician's verbs behind cli.py: scan, doctor, audit, the platform's signing tools."""
