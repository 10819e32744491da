"""Articles coming in: files and feed pages read into `Article`s (ingest), cut into token-counted
chunks (chunk), and what is found in an article when it is indexed (dates, quotations and
statements, speakers: quotes); the feeds and the folder watcher that bring new ones.

May import: models, and the shared config, types, errors, text, version. Nothing above it.
"""
