# frozen_string_literal: true

module DSPyStorage
  VERSION = "0.1.0"
end
