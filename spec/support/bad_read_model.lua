-- A read model's spec with a mistake in it, for `dynlog rebuild --spec`.
return { table = "bad-read-model", handlers = {}, key = "pk" }
