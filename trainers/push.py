"""`python -m trainers.push RUN OWNER/NAME`: the command line of `trainers.hub.push`, which
holds the publishing and documents its options (`python -m trainers.push --help`)."""

from trainers.hub.push import main

if __name__ == "__main__":
    raise SystemExit(main())
