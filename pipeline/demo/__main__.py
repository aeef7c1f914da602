"""``python -m pipeline.demo`` (what ``make demo`` runs)."""

from pipeline.demo.run import main

if __name__ == "__main__":
    main()
