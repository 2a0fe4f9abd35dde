"""Take a run's model home: the PEFT adapter, the merged model (safetensors), a GGUF file for
llama.cpp-based runtimes, and a model card that states the run's privacy guarantee exactly."""
