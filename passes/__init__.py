"""IR transformations on Relax modules (installed as tvmcompress.passes)."""
