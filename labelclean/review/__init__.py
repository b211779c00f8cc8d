"""Review the audit's suggestions in a local web app and apply the decisions."""
