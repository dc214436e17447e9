"""Dashboard widgets: row lists drawn line by line (fleet, runs, alerts), the loss chart, log views."""
