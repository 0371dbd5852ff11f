"""Task formats (open, choice, classify): a question becomes a prompt (prompts.py), a reply becomes a
vote (answers.py), and short answers are compared (similarity.py)."""
