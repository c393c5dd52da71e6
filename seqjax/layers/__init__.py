"""Neural-network layers: recurrent cells and scans, Transformer blocks, embeddings."""
