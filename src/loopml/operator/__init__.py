"""The Kopf operator of loopml: ModelDeployment and TrainingJob custom resources (#13)."""
