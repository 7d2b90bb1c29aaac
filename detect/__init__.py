"""`python -m detect`: the handler's detections over local files, folders, S3 prefixes or manifests."""
