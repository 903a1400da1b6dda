"""The file path: an S3 object becomes an import job, driven to its end, reported back in S3."""
