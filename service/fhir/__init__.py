"""Everything FHIR: parse and validate, codes and value sets, resources → facts, result → CarePlan and cards."""

from service.fhir import speedups

speedups.install()  # before any fhir.resources model class is created (see speedups)
