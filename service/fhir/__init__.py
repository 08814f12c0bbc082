"""Everything FHIR: parse and validate, codes and value sets, resources → facts, result → CarePlan and cards."""
