"""The dispatcher process (`scheduler-dispatch`): claims and sends deliveries; its elected leader
also runs the timers and the maintenance."""
