{
  "algorithm": "ed25519",
  "key_id": "9ed9437a794776fd",
  "signature": "82crox12M5j4nFI0EbUM6FXhG+eqyymevsfYOiORiHbwXaGAdzg8+VWOy2gMKn6FkD4icnw6PaJC3hsQ0D8RDw=="
}