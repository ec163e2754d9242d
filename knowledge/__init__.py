"""Knowledge: document loading, chunking, embedding, the Chroma store, hybrid retrieval and the index lifecycle."""
