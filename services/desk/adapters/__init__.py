"""What the desk reads from the other services' public HTTP APIs."""
