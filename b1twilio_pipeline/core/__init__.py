"""What every stage shares: settings and the encrypted secrets store, phone numbers, the database."""
