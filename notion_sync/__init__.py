"""notion-sync: Salesforce objects mirrored into Notion databases, as Dagster assets."""
