"""`manage.py evaluate`'s report: text, pictures, HTML, files, and comparing two reports."""
