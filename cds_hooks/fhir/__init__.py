"""FHIR data access: dict readers (`read`), the one HTTP client (`client`), prefetch resolution."""
