"""Files and settings: params.yaml's validation, where every artifact lives, atomic writes and
checked reads, YAML, the MNIST download, dvc.yaml's resolution, the stages' command-line
wrapper and the project's errors. No torch.
"""
