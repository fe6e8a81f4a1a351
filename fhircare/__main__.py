from fhircare.cli import main

main()
