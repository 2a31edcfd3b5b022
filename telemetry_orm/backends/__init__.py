"""What differs between database engines, one module per engine."""
