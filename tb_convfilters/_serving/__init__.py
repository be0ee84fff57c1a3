"""TensorBoard-side serving: the plugin's routes, its own index of the event files, the
data sources the routes read, and giving back memory TensorBoard's loaders used."""
