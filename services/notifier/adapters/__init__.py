"""What the notifier talks to outside Arrears: the partner channels."""
