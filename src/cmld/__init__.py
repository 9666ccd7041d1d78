"""cmld package."""
