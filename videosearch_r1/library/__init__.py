"""Search your own videos: a folder library (build.py), its store (store.py), `vsr1 search` / `vsr1 clip`
(search.py) and a local web page (web.py). Uses engine/, video/ and, for agent mode, agent/."""
