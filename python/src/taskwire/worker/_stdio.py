def claim_stdout() -> None:
    pass
