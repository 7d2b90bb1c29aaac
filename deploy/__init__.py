"""From checkpoint to SageMaker: model.tar.gz, its upload to S3, and the realtime / batch deploy CLI."""
