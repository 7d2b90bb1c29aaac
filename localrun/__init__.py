"""Running the real serving stack on this machine: SeaweedFS S3, the model dir, the AWS toolkit."""
