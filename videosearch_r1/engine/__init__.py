"""The search engine: the embedder with soft tokens (embedder.py), the index and search API, the HTTP service."""
