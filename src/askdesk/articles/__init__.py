"""Articles coming in: files and feed pages read into `Article`s (ingest), cut into token-counted
chunks (chunk), and what is found in an article when it is indexed (quotations and statements:
quotes; who speaks, on spaCy's dependency parse: parser, speakers, names); the feeds (feeds, and
their manners toward a site: polite) and the folder watcher (watch) that bring new ones.

May import: models, and the shared config, types, errors, text, version. Nothing above it.
"""
