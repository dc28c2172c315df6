"""One queue for the fleet (``--queue``): Redis Streams with consumer groups between the
fronts that admit requests and the workers that generate them. No torch here."""
