"""The Textual dashboard. Never imports asyncssh."""
