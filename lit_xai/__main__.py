"""``python -m lit_xai`` → the LightningCLI (fit/validate/test/predict) and the project's own commands."""

from lit_xai.cli import main

if __name__ == "__main__":
    main()
