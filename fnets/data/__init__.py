"""Input pipelines: TFDS datasets read through their random-access array_record data sources."""
