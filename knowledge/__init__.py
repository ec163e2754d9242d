"""Knowledge: document loading, chunking, embedding, the Chroma store and retrieval."""
