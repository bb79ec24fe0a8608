"""The only paho user: the drain, the MQTT client, lanes, R/state, the R/cmd channel."""
