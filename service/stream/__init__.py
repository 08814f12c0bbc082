"""Kafka: the consumer loop, transactional producers and the dead-letter topic (the only importer of aiokafka)."""
