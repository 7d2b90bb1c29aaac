"""Request handling for the SageMaker EfficientDet endpoint: parsing, S3, validation, responses."""
