"""Local stand-ins for Salesforce and Notion (real HTTP servers) used by the demo and the tests."""
