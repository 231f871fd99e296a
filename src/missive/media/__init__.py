"""Images and documents in requests: url sources fetched behind guards, file sources read, bytes checked."""
