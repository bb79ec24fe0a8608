"""The technician's page (issue 15, CONTRACT section 9): a read-only web view of a running agent."""
