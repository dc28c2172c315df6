"""flux_operator: the kopf operator that reconciles FluxDeployment resources."""
