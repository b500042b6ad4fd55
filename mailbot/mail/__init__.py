"""Mail in and out: IMAP and Maildir sources, the SMTP transport, building outgoing mail."""
