"""The Avro schemas (`*.avsc`; earlier versions in `previous/`), installed as the package
`freshrank_schemas` so that a wheel carries them (read through `udfs.schemas`)."""
