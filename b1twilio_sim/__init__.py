"""Loopback HTTP simulators of the SAP Business One Service Layer and Twilio's REST API, and the demo that
runs the pipeline against them. Kept out of the product package: a deployment never imports them."""
