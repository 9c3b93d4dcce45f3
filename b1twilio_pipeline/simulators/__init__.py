"""Loopback HTTP simulators of the SAP Business One Service Layer and Twilio's REST API."""
