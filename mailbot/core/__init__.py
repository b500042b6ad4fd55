"""The pure core: parsing, deciding, routing, dates, indicators. No I/O module is imported
here (no IMAP, SMTP, database or web), which a test of the import graph enforces."""
